"""Reports for people: a use case's report as terminal text and as one self-contained HTML page."""
