"""Drift monitoring (PSI against the reference bins of mlops_ray.data.bins, the drift monitor): issue 10."""
