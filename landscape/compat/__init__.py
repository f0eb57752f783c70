"""Drop-in replacements for other libraries' interfaces, computed with this toolkit's algorithms."""
