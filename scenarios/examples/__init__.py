"""Example detectors for `openvica scenarios test` (see color_detector.py)."""
