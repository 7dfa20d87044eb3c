-- The ICPIF-style voice-quality figure of a call (lower is better), measured on the caller's
-- leg by the media engine and reported in RADIUS accounting as h323-voice-quality. NULL for
-- calls that carried no media through us (refused attempts, calls settled by the sweeper).
ALTER TABLE call_records ADD COLUMN voice_quality BIGINT;
