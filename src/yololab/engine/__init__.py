"""Training, validation, prediction and export engines."""
