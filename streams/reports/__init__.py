"""Renderers of a use-case experiment report (:class:`~streams.domain.experiments.model.UseCaseReport`):
plain text for the terminal (``usecase_text``) and one self-contained HTML page with inline SVG charts
(``usecase_html``). They read only the report's plain values and never touch ClickHouse."""
