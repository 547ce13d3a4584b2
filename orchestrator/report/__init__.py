"""Reports of a run: the model (model.py), report.json from the journal (run_report.py),
junit.xml (junit.py), report.html (html_report.py, svg.py), and the event recorder
that keeps projections and throughput for them (recorder.py). docs/report-json.md
describes every field."""
