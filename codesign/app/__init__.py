"""The application layer: the CLI, the flow's steps, the sweep, reports and the artifact directory."""
