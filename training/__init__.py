"""Training entry points (`python training/wm.py ...`), installed as `openvica_sim.training` so that Ray Train
workers can import what the loops use."""
