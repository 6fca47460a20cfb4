-- Search in languages written without spaces by one character.
--
-- Migration 0007 indexes their runs as overlapping character pairs (北京开会 → 北京 京开 开会), so a
-- query of two or more characters is a phrase of pairs. A query of one character (水, 王, の) found only
-- segments holding it alone between punctuation: it is the first character of no pair when it ends a
-- run. Each run of two or more now also ends with its last character alone (北京开会 → 北京 京开 开会 会),
-- so every character of a run begins some lexeme, and a query's one-character runs are read as
-- prefixes (水 → 水:*): any lexeme beginning with it, which is any place it is said.

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
        IF quoted THEN
            out := out || ' "' || pairs || '" ';  -- a query's phrase: its pairs in order, nothing after
        ELSIF length(run) = 1 THEN
            out := out || ' ' || pairs || ' ';
        ELSE
            out := out || ' ' || pairs || ' ' || right(run, 1) || ' ';  -- the last character begins a lexeme too
        END IF;
        rest := substr(rest, pos + length(run));
    END LOOP;
    RETURN out || rest;
END
$$;

-- `q` (the `simple` reading of the query text `t`) with each one-character run of `t` read as a prefix
CREATE OR REPLACE FUNCTION asr_single_prefixes(q tsquery, t text) RETURNS tsquery
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    one    text;
    target tsquery;
BEGIN
    IF t IS NULL OR t !~ asr_unspaced_runs() THEN
        RETURN q;
    END IF;
    FOR one IN
        SELECT DISTINCT m[1] FROM regexp_matches(t, '(' || asr_unspaced_runs() || ')', 'g') AS m
        WHERE length(m[1]) = 1
    LOOP
        target := plainto_tsquery('simple', one);
        IF numnode(target) = 1 THEN
            q := ts_rewrite(q, target, (target::text || ':*')::tsquery);
        END IF;
    END LOOP;
    RETURN q;
END
$$;

-- what is already stored
UPDATE segments SET search_vector = to_tsvector('simple', asr_pairs(text))
WHERE search_config = 'simple'::regconfig AND text ~ asr_unspaced_runs();
