"""Example detectors for `openvica scenarios test` (car_detector: a small CNN trained on the synthetic world)."""
