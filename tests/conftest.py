"""Shared test settings."""
import os

# Quiet TensorFlow's start-up logging and keep tests on the CPU's default thread pools.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
