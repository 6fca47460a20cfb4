"""HTTP layer: thin controllers over the intake, the job queries and the renderers."""
