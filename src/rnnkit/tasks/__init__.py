"""Ready recipes: each reads or makes its data, trains, evaluates against a baseline."""
