"""ketch login / logout (credentials in the Docker config file, as docker and podman keep them)."""

import sys


def _login_args(p):
    p.add_argument("-u", "--username")
    p.add_argument("-p", "--password")
    p.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    p.add_argument("server", nargs="?", default="docker.io")
    p.set_defaults(func=cmd_login)


def cmd_login(args, ctx):
    import asyncio
    from ketch.errors import InvalidArgument
    from ketch.registry import RegistryClient
    user, password = args.username, args.password
    if args.password_stdin:
        if password:
            raise InvalidArgument("--password and --password-stdin are mutually exclusive")
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
    domain = _domain(args.server)

    async def go():
        async with RegistryClient(insecure=ctx.insecure) as c:
            return await c.login(domain, user, password)
    asyncio.run(go())
    print("Login Succeeded")
    return 0


def _domain(server):
    s = server
    for pre in ("https://", "http://"):
        if s.startswith(pre):
            s = s[len(pre):]
    s = s.split("/", 1)[0]
    if s in ("index.docker.io", "registry-1.docker.io"):
        s = "docker.io"
    return s


def _logout_args(p):
    p.add_argument("server", nargs="?", default="docker.io")
    p.set_defaults(func=cmd_logout)


def cmd_logout(args, ctx):
    from ketch.registry import logout
    domain = _domain(args.server)
    if logout(domain):
        print(f"Removing login credentials for {domain}")
    else:
        print(f"Not logged in to {domain}")
    return 0


def register(sub, name, help_):
    {"login": _login_args, "logout": _logout_args}[name](sub.add_parser(name, help=help_))
