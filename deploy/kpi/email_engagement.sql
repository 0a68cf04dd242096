-- Email engagement per campaign: persons sent, opened and clicked, and the open and click rates
--
-- Email engagement per campaign, in persons: how many persons were sent the campaign, opened it and
-- clicked a link in it, and the shares of those sent (a person who opens five times is one opener, so a
-- rate never passes 100%). open_events and click_events count the events themselves.
-- A person is the resolved customer after every merge (events_by_person); the campaign comes from the
-- event (events_dedup.campaign_name). Email events not resolved to a person yet do not count as persons.
-- Runs on ClickHouse 18.16 and current ClickHouse.
SELECT
    campaign_name,
    uniqExactIf(person_id, event = 'Email Sent' AND person_id != '') AS persons_sent,
    uniqExactIf(person_id, event = 'Email Opened' AND person_id != '') AS persons_opened,
    uniqExactIf(person_id, event = 'Email Link Clicked' AND person_id != '') AS persons_clicked,
    round(100 * persons_opened / greatest(persons_sent, 1), 1) AS open_pct,
    round(100 * persons_clicked / greatest(persons_sent, 1), 1) AS click_pct,
    countIf(event = 'Email Opened') AS open_events,
    countIf(event = 'Email Link Clicked') AS click_events
FROM
(
    SELECT channel, message_id, campaign_name, event FROM events_dedup WHERE channel = 'email'
) AS sent
ANY LEFT JOIN
(
    SELECT channel, message_id, person_id FROM events_by_person WHERE channel = 'email'
) AS persons USING (channel, message_id)
GROUP BY campaign_name
ORDER BY persons_sent DESC, campaign_name
LIMIT 10
