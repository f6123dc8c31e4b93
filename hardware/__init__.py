"""spikec.hardware"""
