-- Lets one statement refuse to commit half of its data-modifying CTEs: the common completion of an
-- operation (store Amazon's answer, insert the new object, append its event) runs as a single
-- statement, and this aborts it, with everything it wrote, when its parts disagree.
CREATE FUNCTION ledger_require(ok boolean, message text) RETURNS boolean
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    IF ok IS NOT TRUE THEN
        RAISE EXCEPTION USING ERRCODE = 'P0004', MESSAGE = message;
    END IF;
    RETURN true;
END
$$;
