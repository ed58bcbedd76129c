"""ketch login / logout, as the docker CLI does them: the daemon checks the credentials against
the registry (POST /auth) and the client keeps them in its Docker config file
(ketch.client.auth: $DOCKER_CONFIG/config.json or ~/.docker/config.json); logout only edits that file."""

import sys


def _login_args(p):
    p.add_argument("-u", "--username")
    p.add_argument("-p", "--password")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.add_argument("server", nargs="?", default="docker.io")
    p.set_defaults(func=cmd_login)


def cmd_login(args, ctx):
    from ketch.client import auth
    from ketch.errors import InvalidArgument
    user, password = args.username, args.password
    if args.password_stdin:
        if password:
            raise InvalidArgument("--password and --password-stdin are mutually exclusive")
        if not user:
            raise InvalidArgument("must provide --username with --password-stdin")
        password = sys.stdin.read().rstrip("\r\n")
    if not user:
        if not sys.stdin.isatty():
            raise InvalidArgument("login: a username is needed (-u) when stdin is not a terminal")
        user = input("Username: ").strip()
    if password is None:
        if not sys.stdin.isatty():
            raise InvalidArgument("login: a password is needed (-p or --password-stdin)")
        import getpass
        password = getpass.getpass("Password: ")
    if not user or not password:
        raise InvalidArgument("login: username and password must not be empty")
    domain = auth.domain_of(args.server)
    server = auth.DOCKER_HUB_KEY if domain == "docker.io" else domain
    res = ctx.client.auth(user, password, server)
    auth.save(domain, user, password, (res or {}).get("IdentityToken") or "")
    print((res or {}).get("Status") or "Login Succeeded")
    return 0


def _logout_args(p):
    p.add_argument("server", nargs="?", default="docker.io")
    p.set_defaults(func=cmd_logout)


def cmd_logout(args, ctx):
    from ketch.client import auth
    domain = auth.domain_of(args.server)
    if auth.remove(domain):
        print(f"Removing login credentials for {domain}")
    else:
        print(f"Not logged in to {domain}")
    return 0


def register(sub, name, help_):
    {"login": _login_args, "logout": _logout_args}[name](sub.add_parser(name, help=help_))
