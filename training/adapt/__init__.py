"""Domain adaptation of a trained model to a site's unlabelled clips (``echoseg adapt``)."""
