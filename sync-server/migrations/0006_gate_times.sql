-- Gate times (version 6): what a device said beside what the server knows.
--
-- `scans.scanned_at`, `redemptions.redeemed_at` and `gate_conflicts.*_at`
-- become the times the server orders admissions by: its own clock for an
-- online redemption; for an offline scan, the device's time read through the
-- gate's measured clock error and never later than the server received it.
-- The device's own claim is kept in `device_at`.

ALTER TABLE scans ADD COLUMN device_at INTEGER;
UPDATE scans SET device_at = scanned_at WHERE mode = 'offline';
UPDATE scans SET scanned_at = MIN(scanned_at, received_at) WHERE mode = 'offline';

ALTER TABLE redemptions ADD COLUMN device_at INTEGER;
ALTER TABLE redemptions ADD COLUMN received_at INTEGER;
UPDATE redemptions SET
    device_at = CASE WHEN mode = 'offline' THEN redeemed_at END,
    received_at = COALESCE((SELECT s.received_at FROM scans s WHERE s.scan_id = redemptions.scan_id), redeemed_at),
    redeemed_at = COALESCE((SELECT s.scanned_at FROM scans s WHERE s.scan_id = redemptions.scan_id), redeemed_at);

ALTER TABLE gate_conflicts ADD COLUMN first_device_at INTEGER;
ALTER TABLE gate_conflicts ADD COLUMN second_device_at INTEGER;
UPDATE gate_conflicts SET
    first_device_at = (SELECT s.device_at FROM scans s WHERE s.scan_id = first_scan),
    second_device_at = (SELECT s.device_at FROM scans s WHERE s.scan_id = second_scan),
    first_at = COALESCE((SELECT s.scanned_at FROM scans s WHERE s.scan_id = first_scan), first_at),
    second_at = COALESCE((SELECT s.scanned_at FROM scans s WHERE s.scan_id = second_scan), second_at);
