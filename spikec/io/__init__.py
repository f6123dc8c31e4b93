"""Reading and writing spikec networks in other formats: NIR (the neuromorphic intermediate representation)."""
from spikec.io.nir_common import NIRExportError, NIRImportError
from spikec.io.nir_export import to_nir, write_nir
from spikec.io.nir_import import from_nir, read_nir

__all__ = ["NIRExportError", "NIRImportError", "from_nir", "read_nir", "to_nir", "write_nir"]
