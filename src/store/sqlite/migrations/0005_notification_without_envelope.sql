-- The outbox stores one commsNotification per row; the envelope is added when it is POSTed.
-- Rows written before held the whole envelope (with that one notification in its value list).
UPDATE notifications
SET body = json_extract(body, '$.value[0]')
WHERE json_valid(body)
  AND json_extract(body, '$."@odata.type"') = '#microsoft.graph.commsNotifications';
