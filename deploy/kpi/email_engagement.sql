-- Email engagement per campaign: sends, opens, clicks and rates.
SELECT
    campaign_name,
    countIf(event = 'Email Sent') AS sent,
    countIf(event = 'Email Opened') AS opened,
    countIf(event = 'Email Link Clicked') AS clicked,
    round(100 * countIf(event = 'Email Opened') / greatest(countIf(event = 'Email Sent'), 1), 1) AS open_pct,
    round(100 * countIf(event = 'Email Link Clicked') / greatest(countIf(event = 'Email Sent'), 1), 1) AS click_pct
FROM events_dedup
WHERE channel = 'email'
GROUP BY campaign_name
ORDER BY sent DESC
LIMIT 10
