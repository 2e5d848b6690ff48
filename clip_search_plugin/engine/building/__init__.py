"""Building an index: tiles read, embedded and written, with checkpoints so a stopped build resumes."""
