-- prune_history (jobs/prune_history.py) deletes each growing table's rows older than its
-- retention in short batches, walking an index on the column they age by: these, and
-- runs_happened_at (0002) for the runs.

CREATE INDEX run_logs_at ON maintd.run_logs (at);
CREATE INDEX audit_at ON maintd.audit (at);
CREATE INDEX report_deliveries_report_date ON maintd.report_deliveries (report_date);
