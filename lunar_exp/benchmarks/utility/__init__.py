"""General utility evaluations any benchmark can add (conf/utility/)."""
