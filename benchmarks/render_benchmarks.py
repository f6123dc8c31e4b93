"""Write BENCHMARKS.md from the per-benchmark results in benchmarks/results/*.md.

The CIFAR-scale sections of BENCHMARKS.md are written by hand; this script rewrites the whole file
and would drop them, so it prints to stdout (for copying sections across) unless given ``--write``.

    python benchmarks/render_benchmarks.py [--write]
"""
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parent.parent
ORDER = ["neuron_kernels.md", "gpu_suite.md", "rate_conversion.md", "cifar10.md", "one_pass_eval.md", "ttfs.md", "compression.md", "compression_unseen.md", "energy.md", "energy_comparison.md"]
HEADER = [
    "# Benchmarks\n",
    "Every figure here comes from a script under `benchmarks/`, run on the machine and date stated in its section, "
    "with the command that reproduces it. Speed comparisons are ratios measured side by side in one process, because "
    "these machines are shared and noisy; treat absolute milliseconds as indicative only. No GPU was lent to the "
    "sessions that recorded these numbers, so every figure is from the 2-core CPU machine; the Triton kernels were "
    "validated for correctness only (under `TRITON_INTERPRET=1`), not timed.\n",
    "Raw results for the longer runs sit beside the scripts in `benchmarks/results/*.json`. "
    "The digits sections were rendered by `python benchmarks/render_benchmarks.py` from `benchmarks/results/*.md`; "
    "the CIFAR-scale sections are written by hand from the JSON beside them (re-rendering would drop them).\n",
]


def main() -> None:
    parts = list(HEADER)
    results = ROOT / "benchmarks" / "results"
    for name in ORDER:
        paths = [results / name]
        if name == "compression_unseen.md":  # its ablations (--tag) follow it
            paths += sorted(results.glob("compression_unseen_*.md"))
        for path in paths:
            if path.exists():  # every heading one level down, under the file's title
                parts.append(re.sub(r"^(#+) ", lambda m: "#" + m.group(1) + " ", path.read_text(), flags=re.M).strip() + "\n")
    import sys

    if "--write" not in sys.argv[1:]:
        sys.stdout.write("\n".join(parts))
        return
    out = ROOT / "BENCHMARKS.md"
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text("\n".join(parts))
    tmp.replace(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
