"""Report writers (JSON, HTML, Markdown, SARIF, JUnit) and evidence plots."""
