-- Up Migration

-- Documents (ConvertDocument): a conversion of several images, a page each. original_key stays the first page's
-- original; page_keys lists them all in page order (null for a one-image conversion). pages_done is the progress
-- that WatchConversion shows; text_* describe the searchable text that OCR added.
alter table mcsv_user.conversions
  add column page_count integer not null default 1,
  add column pages_done integer not null default 0,
  add column page_keys text[],
  add column text_words integer,
  add column text_languages text[];

-- Down Migration

alter table mcsv_user.conversions
  drop column text_languages,
  drop column text_words,
  drop column page_keys,
  drop column pages_done,
  drop column page_count;
