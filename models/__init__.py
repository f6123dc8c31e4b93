"""spikec.models"""
