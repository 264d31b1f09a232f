-- Placeholder, filled by the payments work of issue 10 (payments, webhook
-- events, refunds, channels, order details). Kept so 0011 applies in order.
SELECT 1;
