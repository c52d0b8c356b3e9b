"""Built-in model kinds, one module each (the ``kinds`` layer: above ``train``, so a kind may call
training code; found by name through :data:`mlops_ray.model.kinds.BUILTIN_KINDS`)."""
