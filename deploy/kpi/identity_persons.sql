-- Persons and identifiers now: known customers, anonymous persons, merged person ids
--
-- Persons and identifiers now (after every merge): one row.
-- known_customers: persons with a customer-level identifier (customer_id, crm_id, email, loyalty_card,
-- phone); anonymous_persons: the others (cookies and devices only). merged_person_ids: person ids that
-- were folded into an older person and now live on under it.
-- Runs on ClickHouse 18.16 and current ClickHouse.
SELECT
    uniqExact(person_id) AS persons,
    count() AS identifiers,
    if(persons = 0, 0, round(identifiers / persons, 2)) AS identifiers_per_person,
    uniqExactIf(person_id, kind IN ('customer_id', 'crm_id', 'email', 'loyalty_card', 'phone'))
        AS known_customers,
    persons - known_customers AS anonymous_persons,
    (SELECT count() FROM person_canonical) AS merged_person_ids
FROM identities_current
