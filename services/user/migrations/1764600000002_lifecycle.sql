-- Up Migration

-- The retention prune (retention.ts) finds old rows by these, and deleting an upload checks that no conversion
-- names it (the foreign key's own check needs the upload_id index too).
create index conversions_finished on mcsv_user.conversions (finished_at) where finished_at is not null;
create index conversions_by_upload on mcsv_user.conversions (upload_id) where upload_id is not null;
create index uploads_by_created on mcsv_user.uploads (created_at);
create index outbox_done on mcsv_user.outbox ((coalesce(sent_at, dead_at))) where sent_at is not null or dead_at is not null;

-- Down Migration

drop index mcsv_user.outbox_done;
drop index mcsv_user.uploads_by_created;
drop index mcsv_user.conversions_by_upload;
drop index mcsv_user.conversions_finished;
