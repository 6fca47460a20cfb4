-- Search in languages written without spaces (Chinese, Japanese, Thai, Lao, Khmer, Burmese).
--
-- Their segments are stored in `simple`, whose parser takes a whole clause between two punctuation
-- marks as one word: "我们明天去北京开会。" was found by that clause only, never by 北京. Runs of those
-- scripts are now indexed as overlapping character pairs (北京开会 → 北京 京开 开会), and a query's
-- runs are read as phrases of pairs, so any two or more consecutive characters find the segments that
-- hold them in that order. Only the `simple` configuration changes, and only for text in those
-- scripts: the vector of any other `simple` segment stays what it was.

-- a run of characters of the scripts written without spaces (CJK punctuation is not part of a run)
CREATE OR REPLACE FUNCTION asr_unspaced_runs() RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT '[\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f'
           '\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff]+'
$$;

-- `t` with each run of two or more such characters spelled as its overlapping pairs ("ab bc cd"),
-- each run set apart by spaces; `quoted`: each run's pairs in double quotes (a query's phrase)
CREATE OR REPLACE FUNCTION asr_pairs(t text, quoted boolean DEFAULT false) RETURNS text
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    out  text := '';
    rest text := t;
    pos  integer;
    run  text;
    pairs text;
BEGIN
    IF t IS NULL OR t !~ asr_unspaced_runs() THEN
        RETURN t;
    END IF;
    LOOP
        run := substring(rest FROM asr_unspaced_runs());
        EXIT WHEN run IS NULL;
        pos := strpos(rest, run);
        out := out || substr(rest, 1, pos - 1);
        IF length(run) = 1 THEN
            pairs := run;
        ELSE
            SELECT string_agg(substr(run, i, 2), ' ' ORDER BY i) INTO pairs
            FROM generate_series(1, length(run) - 1) AS i;
        END IF;
        out := out || ' ' || CASE WHEN quoted THEN '"' || pairs || '"' ELSE pairs END || ' ';
        rest := substr(rest, pos + length(run));
    END LOOP;
    RETURN out || rest;
END
$$;

CREATE OR REPLACE FUNCTION segments_search_vector() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.search_config := coalesce(
        (SELECT l.config FROM jobs j JOIN search_languages l
             ON l.language = coalesce(j.language, j.options ->> 'language')
         WHERE j.id = NEW.job_id),
        'simple'::regconfig);
    NEW.search_vector := to_tsvector(
        NEW.search_config,
        CASE WHEN NEW.search_config = 'simple'::regconfig THEN asr_pairs(NEW.text) ELSE NEW.text END);
    IF NOT EXISTS (SELECT 1 FROM search_configs_used WHERE config = NEW.search_config) THEN
        INSERT INTO search_configs_used (config) VALUES (NEW.search_config) ON CONFLICT DO NOTHING;
    END IF;
    RETURN NEW;
END
$$;

-- what is already stored
UPDATE segments SET search_vector = to_tsvector('simple', asr_pairs(text))
WHERE search_config = 'simple'::regconfig AND text ~ asr_unspaced_runs();
