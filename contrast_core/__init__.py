"""Contrast Lab's engine: datasets, encoders, losses, samplers, training, run store and job queue.

Pure Python + torch; never imports streamlit or plotly.
"""
