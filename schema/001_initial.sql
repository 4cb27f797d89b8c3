-- placeholder, replaced by the index work
SELECT 1;
