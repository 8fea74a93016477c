"""Network definitions and checkpoint converters for the original DBP model releases."""
