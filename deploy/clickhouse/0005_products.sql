-- The single product view in the warehouse, mirrored from the compacted products.catalog topic (one row
-- per product version; streams/warehouse/products.py builds the rows). Delivery is at least once and a
-- product is re-imported at will, so the table is a ReplacingMergeTree keyed by product_id whose newest
-- updated_at wins; read it with FINAL (or through product_ids). deleted = 1 is the newest version of a
-- product removed from the catalog (omniseg catalog import --delete-missing).
-- Channel ids are stored as imported: EANs are digits only, SKUs and app ids trimmed (docs/catalog.md).
CREATE TABLE IF NOT EXISTS products
(
    product_id String,
    name String,
    category String,
    brand String,
    price Nullable(Float64),
    currency String,
    web_skus Array(String),
    app_product_ids Array(String),
    eans Array(String),
    deleted UInt8,
    updated_at DateTime,
    ingested_at DateTime DEFAULT now()
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY product_id;

-- Each channel id of every live product -> its product, for enriching event lines in SQL:
--   kind        web_sku | app_product_id | ean
--   id          the id as imported; web_sku rows include the product id itself, because a web SKU equal
--               to a product id finds that product (web shops often send the product id as the SKU)
--   match_key   what to compare: the id itself, but for EANs the GTIN-14 form (left-padded with zeros to
--               14 digits), so EAN-13, UPC-A and GTIN-14 spellings of one code meet
-- One join on (kind, match_key) enriches every line of every channel; docs/catalog.md has the query:
--   the line's kind is web_sku, ean or app_product_id (the first non-empty, in that order), and its EAN
--   is brought to the same form: spaces and hyphens removed, then padded like match_key below.
-- The deleted filter runs after FINAL has picked each product's newest version, so a deleted product
-- never shows through an older version.
CREATE VIEW IF NOT EXISTS product_ids AS
SELECT kind, id, match_key, product_id
FROM
(
    SELECT 'web_sku' AS kind, web_sku AS id, web_sku AS match_key, product_id
    FROM
    (
        SELECT product_id, arrayConcat(arrayFilter(sku -> sku != product_id, web_skus), [product_id]) AS skus
        FROM (SELECT product_id, web_skus, deleted FROM products FINAL)
        WHERE deleted = 0
    )
    ARRAY JOIN skus AS web_sku
    UNION ALL
    SELECT 'app_product_id' AS kind, app_product_id AS id, app_product_id AS match_key, product_id
    FROM (SELECT product_id, app_product_ids, deleted FROM products FINAL)
    ARRAY JOIN app_product_ids AS app_product_id
    WHERE deleted = 0
    UNION ALL
    SELECT 'ean' AS kind, ean AS id, substring(concat('0000000000000', ean), length(ean), 14) AS match_key,
        product_id
    FROM (SELECT product_id, eans, deleted FROM products FINAL)
    ARRAY JOIN eans AS ean
    WHERE deleted = 0
);
