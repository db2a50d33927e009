"""pytest-benchmark cases, one module per measured thing; `bench run` selects and runs them."""
