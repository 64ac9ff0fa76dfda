"""What the report shows: cell diagrams, statistics over searches and trainings, and one
renderer for its markdown and HTML."""
