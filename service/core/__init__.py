"""Service core: settings, domain errors, metrics."""
