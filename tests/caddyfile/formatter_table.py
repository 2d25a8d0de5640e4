"""`caddy fmt` cases re-expressed from Caddy's caddyconfig/caddyfile/formatter_test.go.

Each row: (description, input, expected output).
"""

FORMATTER_CASES = [
    (
        'very simple',
        'abc   def\n\tg hi jkl\nmn',
        'abc def\ng hi jkl\nmn\n',
    ),
    (
        'basic indentation, line breaks, and nesting',
        '  a\nb\n\n\tc {\n\t\td\n}\n\ne { f\n}\n\n\n\ng {\nh {\ni\n}\n}\n\nj { k {\nl\n}\n}\n\nm {\n\tn { o\n\t}\n\tp { q r\ns }\n}\n\n\t{\n{ t\n\t\tu\n\n\tv\n\nw\n}\n}',
        'a\nb\n\nc {\n\td\n}\n\ne {\n\tf\n}\n\ng {\n\th {\n\t\ti\n\t}\n}\n\nj {\n\tk {\n\t\tl\n\t}\n}\n\nm {\n\tn {\n\t\to\n\t}\n\tp {\n\t\tq r\n\t\ts\n\t}\n}\n\n{\n\t{\n\t\tt\n\t\tu\n\n\t\tv\n\n\t\tw\n\t}\n}\n',
    ),
    (
        'block spacing',
        'a{\n\tb\n}\n\nc{ d\n}',
        'a {\n\tb\n}\n\nc {\n\td\n}\n',
    ),
    (
        'advanced spacing',
        'abc {\n\tdef\n}ghi{\n\tjkl mno\npqr}',
        'abc {\n\tdef\n}\n\nghi {\n\tjkl mno\n\tpqr\n}\n',
    ),
    (
        'env var placeholders',
        '{$A}\n\nb {\n{$C}\n}\n\nd { {$E}\n}\n\n{ {$F}\n}\n',
        '{$A}\n\nb {\n\t{$C}\n}\n\nd {\n\t{$E}\n}\n\n{\n\t{$F}\n}\n',
    ),
    (
        'env var placeholders with port',
        ':{$PORT}',
        ':{$PORT}\n',
    ),
    (
        'comments',
        '#a "\\n"\n\n #b {\n\tc\n}\n\nd {\ne#f\n# g\n}\n\nh { # i\n}',
        '#a "\\n"\n\n#b {\nc\n}\n\nd {\n\te#f\n\t# g\n}\n\nh {\n\t# i\n}\n',
    ),
    (
        'quotes and escaping',
        '"a \\"b\\" "#c\n\td\n\ne {\n"f"\n}\n\ng { "h"\n}\n\ni {\n\t"foo\nbar"\n}\n\nj {\n"\\"k\\" l m"\n}',
        '"a \\"b\\" "#c\nd\n\ne {\n\t"f"\n}\n\ng {\n\t"h"\n}\n\ni {\n\t"foo\nbar"\n}\n\nj {\n\t"\\"k\\" l m"\n}\n',
    ),
    (
        'bad nesting (too many open)',
        'a\n{\n\t{\n}',
        'a {\n\t{\n\t}\n',
    ),
    (
        'bad nesting (too many close)',
        'a\n{\n\t{\n}}}',
        'a {\n\t{\n\t}\n}\n}\n',
    ),
    (
        'json',
        'foo\nbar      "{\\"key\\":34}"\n',
        'foo\nbar "{\\"key\\":34}"\n',
    ),
    (
        'escaping after spaces',
        'foo \\"literal\\"',
        'foo \\"literal\\"\n',
    ),
    (
        'simple placeholders as standalone tokens',
        'foo {bar}',
        'foo {bar}\n',
    ),
    (
        'simple placeholders within tokens',
        'foo{bar} foo{bar}baz',
        'foo{bar} foo{bar}baz\n',
    ),
    (
        'placeholders and malformed braces',
        'foo{bar} foo{ bar}baz',
        'foo{bar} foo {\n\tbar\n}\n\nbaz\n',
    ),
    (
        'hash within string is not a comment',
        'redir / /some/#/path',
        'redir / /some/#/path\n',
    ),
    (
        'brace does not fold into comment above',
        '# comment\n{\n\tfoo\n}',
        '# comment\n{\n\tfoo\n}\n',
    ),
    (
        'matthewpi/vscode-caddyfile-support#13',
        '{\n\temail {$ACMEEMAIL}\n\t#debug\n}\n\nblock {\n}\n',
        '{\n\temail {$ACMEEMAIL}\n\t#debug\n}\n\nblock {\n}\n',
    ),
    (
        'matthewpi/vscode-caddyfile-support#13 - bad formatting',
        '{\n\temail {$ACMEEMAIL}\n\t#debug\n\t}\n\n\tblock {\n\t}\n',
        '{\n\temail {$ACMEEMAIL}\n\t#debug\n}\n\nblock {\n}\n',
    ),
    (
        'keep heredoc as-is',
        "block {\n\theredoc <<HEREDOC\n\tHere's more than one space       Here's more than one space\n\tHEREDOC\n}\n",
        "block {\n\theredoc <<HEREDOC\n\tHere's more than one space       Here's more than one space\n\tHEREDOC\n}\n",
    ),
    (
        'Mixing heredoc with regular part',
        'block {\n\theredoc <<HEREDOC\n\tHere\'s more than one space       Here\'s more than one space\n\tHEREDOC\n\trespond "More than one space will be eaten"     200\n}\n\nblock2 {\n\theredoc <<HEREDOC\n\tHere\'s more than one space       Here\'s more than one space\n\tHEREDOC\n\trespond "More than one space will be eaten" 200\n}\n',
        'block {\n\theredoc <<HEREDOC\n\tHere\'s more than one space       Here\'s more than one space\n\tHEREDOC\n\trespond "More than one space will be eaten" 200\n}\n\nblock2 {\n\theredoc <<HEREDOC\n\tHere\'s more than one space       Here\'s more than one space\n\tHEREDOC\n\trespond "More than one space will be eaten" 200\n}\n',
    ),
    (
        'Heredoc as regular token',
        'block {\n\theredoc <<HEREDOC                                 "More than one space will be eaten"\n}\n',
        'block {\n\theredoc <<HEREDOC "More than one space will be eaten"\n}\n',
    ),
    (
        'Escape heredoc',
        'block {\n\theredoc \\<<HEREDOC\n\trespond "More than one space will be eaten"                           200\n}\n',
        'block {\n\theredoc \\<<HEREDOC\n\trespond "More than one space will be eaten" 200\n}\n',
    ),
    (
        'Preserve braces wrapped by backquotes',
        'block {respond `All braces should remain: {{now | date "2006"}}`}',
        'block {respond `All braces should remain: {{now | date "2006"}}`}\n',
    ),
    (
        'Preserve braces wrapped by quotes',
        'block {respond "All braces should remain: {{now | date `2006`}}"}',
        'block {respond "All braces should remain: {{now | date `2006`}}"}\n',
    ),
    (
        'Preserve quoted brace arguments',
        'block {\n\trespond "{"\n\trespond "}"\n}',
        'block {\n\trespond "{"\n\trespond "}"\n}\n',
    ),
    (
        'Preserve quoted backticks and backticked quotes',
        'block { respond "`" } block { respond `"`}',
        'block {\n\trespond "`"\n}\n\nblock {\n\trespond `"`\n}\n',
    ),
    (
        'No trailing space on line before env variable',
        '{\n\ta\n\n\t{$ENV_VAR}\n}\n',
        '{\n\ta\n\n\t{$ENV_VAR}\n}\n',
    ),
    (
        'issue #7425: multiline backticked string indentation',
        'https://localhost:8953 {\n    respond `Here are some random numbers:\n\n{{randNumeric 16}}\n\nHope this helps.`\n}',
        'https://localhost:8953 {\n\trespond `Here are some random numbers:\n\n{{randNumeric 16}}\n\nHope this helps.`\n}\n',
    ),
    (
        'imports before global options block keep standalone brace',
        'import ./conf.d/matcher_my_subnet.caddy\nimport ./conf.d/matcher_not_my_subnet.caddy\n{\n\torder crowdsec first\n\torder appsec after crowdsec\n}',
        'import ./conf.d/matcher_my_subnet.caddy\nimport ./conf.d/matcher_not_my_subnet.caddy\n{\n\torder crowdsec first\n\torder appsec after crowdsec\n}\n',
    ),
]
