"""Acquisition: device protocols, drivers (gphoto2, RealSense, OpenNI2), the simulated rig, paired capture."""
