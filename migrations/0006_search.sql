-- Full-text search over every stored segment (issue 20: GET /v1/search, `asrctl search`).
--
-- Each segment keeps the text-search configuration chosen from its job's language (english for
-- `en`, german for `de`, ...; `simple` for a language PostgreSQL has no stemmer for) and its
-- tsvector in that configuration, set by a trigger when the segment is stored. A query is parsed
-- with websearch_to_tsquery in every configuration in use and matched against the segments of that
-- configuration only, so stemming on both sides always agrees.

-- Whisper's language codes and the built-in configuration for each; only those this server has
-- (the list differs between PostgreSQL versions) are inserted.
CREATE TABLE search_languages (
    language text PRIMARY KEY,
    config   regconfig NOT NULL
);

INSERT INTO search_languages (language, config)
SELECT v.language, c.oid::regconfig
FROM (VALUES ('ar', 'arabic'), ('hy', 'armenian'), ('eu', 'basque'), ('ca', 'catalan'), ('da', 'danish'),
             ('nl', 'dutch'), ('en', 'english'), ('fi', 'finnish'), ('fr', 'french'), ('de', 'german'),
             ('el', 'greek'), ('hi', 'hindi'), ('hu', 'hungarian'), ('id', 'indonesian'), ('it', 'italian'),
             ('lt', 'lithuanian'), ('ne', 'nepali'), ('no', 'norwegian'), ('nn', 'norwegian'),
             ('pt', 'portuguese'), ('ro', 'romanian'), ('ru', 'russian'), ('sr', 'serbian'),
             ('es', 'spanish'), ('sv', 'swedish'), ('ta', 'tamil'), ('tr', 'turkish'), ('yi', 'yiddish'))
     AS v(language, name)
JOIN pg_ts_config c ON c.cfgname = v.name AND c.cfgnamespace = 'pg_catalog'::regnamespace;

-- the configurations segments are stored in: a query is read in each of these only
CREATE TABLE search_configs_used (
    config regconfig PRIMARY KEY
);

ALTER TABLE segments
    ADD COLUMN search_config regconfig NOT NULL DEFAULT 'simple',
    ADD COLUMN search_vector tsvector;

CREATE FUNCTION segments_search_vector() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.search_config := coalesce(
        (SELECT l.config FROM jobs j JOIN search_languages l
             ON l.language = coalesce(j.language, j.options ->> 'language')
         WHERE j.id = NEW.job_id),
        'simple'::regconfig);
    NEW.search_vector := to_tsvector(NEW.search_config, NEW.text);
    IF NOT EXISTS (SELECT 1 FROM search_configs_used WHERE config = NEW.search_config) THEN
        INSERT INTO search_configs_used (config) VALUES (NEW.search_config) ON CONFLICT DO NOTHING;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER segments_search_vector BEFORE INSERT OR UPDATE OF text ON segments
    FOR EACH ROW EXECUTE FUNCTION segments_search_vector();

-- what is already stored
UPDATE segments s SET search_config = coalesce(l.config, 'simple'::regconfig)
FROM jobs j LEFT JOIN search_languages l ON l.language = coalesce(j.language, j.options ->> 'language')
WHERE j.id = s.job_id;
UPDATE segments SET search_vector = to_tsvector(search_config, text);
INSERT INTO search_configs_used (config) SELECT DISTINCT search_config FROM segments;

-- fastupdate off: new entries go straight into the index instead of a pending list that every
-- search would scan linearly until the next vacuum (segments arrive one by one: inserts stay cheap)
CREATE INDEX segments_search_idx ON segments USING gin (search_vector) WITH (fastupdate = off);
