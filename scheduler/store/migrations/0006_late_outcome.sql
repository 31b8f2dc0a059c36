-- A run declared lost (or a fire claimed ahead and recorded missed) keeps that record
-- for good. Its owner, frozen or cut off past its lease, may still learn how the run
-- really ended: that outcome is kept beside the record, never in place of it.
ALTER TABLE maintd.runs ADD COLUMN late_outcome jsonb;
