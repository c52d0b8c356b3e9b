"""mlops-ray: raw tabular data to an autoscaled, monitored model service on open-source Ray."""

__version__ = "0.1.0"
