"""Gymnasium environments over the simulator (installed as openvica_sim.envs)."""
