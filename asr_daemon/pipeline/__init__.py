"""The job pipeline: intake of uploads, the queue and its wake-ups, the worker, cancels, events,
webhooks, housekeeping."""
