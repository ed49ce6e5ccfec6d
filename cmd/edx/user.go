package main

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/edxhub/edx/hub/auth"
	"github.com/edxhub/edx/hub/service"
	"github.com/edxhub/edx/pkg/document"
)

// Accounts are managed through the hub's API, like units: the hub owns its
// accounts database (one writer, its caches and sessions stay right), the
// same command works against a hub on another machine, and the admin token
// (DATA/admin.token, read from --data by default) or an admin's API token
// authorises it.

func init() {
	register(command{"user add", "create a hub account (staff of a unit, archivist, auditor, admin)", userAdd})
	register(command{"user list", "list the hub's accounts", userList})
	register(command{"user disable", "disable an account (its sessions and API tokens end for good)", userSet(true)})
	register(command{"user enable", "enable a disabled account", userSet(false)})
	register(command{"user passwd", "reset an account's password as an admin (generated unless --password-file); its sessions and tokens end", userPasswd})
	register(command{"user token", "create an API token for an account, for edx search, get and verify", userToken})
}

// readPassword reads a password file (first line), or "" when path is "".
func readPassword(path string) (string, error) {
	if path == "" {
		return "", nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	return strings.TrimRight(strings.SplitN(string(b), "\n", 2)[0], "\r"), nil
}

func userAdd(ctx context.Context, e *env, args []string) int {
	fs := flags(e, "user add", "--role staff|archivist|auditor|admin [--unit ID] [--display-name NAME] [--password-file F] [--token NAME] USER [--hub URL --token-file F | --data DIR]")
	var hf hubFlags
	hf.register(fs)
	role := fs.String("role", "", "staff (records staff of --unit), archivist, auditor or admin")
	unit := fs.String("unit", "", "the unit of a staff account, e.g. 000.01.00.H29")
	display := fs.String("display-name", "", "the person's name, as shown")
	pwFile := fs.String("password-file", "", "file holding the password (default: the hub generates one and it is printed once)")
	token := fs.String("token", "", "also create an API token with this name, printed once")
	if c := parse(fs, args); c >= 0 {
		return c
	}
	if fs.NArg() != 1 || *role == "" {
		fs.Usage()
		return exitUsage
	}
	pw, err := readPassword(*pwFile)
	if err != nil {
		return fail(e, "%v", err)
	}
	c, err := hf.client()
	if err != nil {
		return fail(e, "%v", err)
	}
	var res service.NewUserResult
	req := auth.NewUser{Name: fs.Arg(0), DisplayName: *display, Role: auth.Role(*role), Unit: document.UnitID(*unit), Password: pw}
	if err := c.do(ctx, "POST", "/api/v1/users", req, &res); err != nil {
		return fail(e, "%v", err)
	}
	u := res.User
	fmt.Fprintf(e.stdout, "user %s created: %s", u.Name, u.Role)
	if u.Unit != "" {
		fmt.Fprintf(e.stdout, " of unit %s", u.Unit)
	}
	fmt.Fprintln(e.stdout)
	if res.Password != "" {
		fmt.Fprintf(e.stdout, "password: %s\n(shown once: hand it over safely; it can be changed on the account page)\n", res.Password)
	}
	if *token != "" {
		var tr service.NewTokenResult
		if err := c.do(ctx, "POST", "/api/v1/tokens", service.TokenRequest{Name: *token, User: u.Name}, &tr); err != nil {
			return fail(e, "%v", err)
		}
		fmt.Fprintf(e.stdout, "token %s: %s\n(expires %s; shown once: use it as EDX_TOKEN or in a --token-file)\n", tr.Token.ID, tr.Secret, showTime(tr.Token.Expires))
	}
	return exitOK
}

func userList(ctx context.Context, e *env, args []string) int {
	fs := flags(e, "user list", "[--hub URL --token-file F | --data DIR]")
	var hf hubFlags
	hf.register(fs)
	if c := parse(fs, args); c >= 0 {
		return c
	}
	c, err := hf.client()
	if err != nil {
		return fail(e, "%v", err)
	}
	var us []auth.User
	if err := c.do(ctx, "GET", "/api/v1/users", nil, &us); err != nil {
		return fail(e, "%v", err)
	}
	tw := tabwriter.NewWriter(e.stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "USER\tROLE\tUNIT\tNAME\tSTATE\tLAST SIGN-IN")
	for _, u := range us {
		state, last := "active", ""
		if u.Disabled {
			state = "disabled"
		}
		if !u.LastSignIn.IsZero() {
			last = showTime(u.LastSignIn)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", u.Name, u.Role, u.Unit, u.DisplayName, state, last)
	}
	tw.Flush()
	return exitOK
}

func userSet(disabled bool) func(ctx context.Context, e *env, args []string) int {
	name := "user enable"
	if disabled {
		name = "user disable"
	}
	return func(ctx context.Context, e *env, args []string) int {
		fs := flags(e, name, "USER [--hub URL --token-file F | --data DIR]")
		var hf hubFlags
		hf.register(fs)
		if c := parse(fs, args); c >= 0 {
			return c
		}
		if fs.NArg() != 1 {
			fs.Usage()
			return exitUsage
		}
		c, err := hf.client()
		if err != nil {
			return fail(e, "%v", err)
		}
		var u auth.User
		if err := c.do(ctx, "PATCH", "/api/v1/users/"+url.PathEscape(fs.Arg(0)), auth.Change{Disabled: &disabled}, &u); err != nil {
			return fail(e, "%v", err)
		}
		fmt.Fprintf(e.stdout, "user %s %sd\n", u.Name, strings.TrimPrefix(name, "user "))
		return exitOK
	}
}

func userPasswd(ctx context.Context, e *env, args []string) int {
	fs := flags(e, "user passwd", "USER [--password-file F] [--hub URL --token-file F | --data DIR]")
	var hf hubFlags
	hf.register(fs)
	pwFile := fs.String("password-file", "", "file holding the new password (default: generated and printed once)")
	if c := parse(fs, args); c >= 0 {
		return c
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return exitUsage
	}
	pw, err := readPassword(*pwFile)
	if err != nil {
		return fail(e, "%v", err)
	}
	generated := pw == ""
	if generated {
		pw = randomPassword()
	}
	c, err := hf.client()
	if err != nil {
		return fail(e, "%v", err)
	}
	if err := c.do(ctx, "PATCH", "/api/v1/users/"+url.PathEscape(fs.Arg(0)), auth.Change{Password: &pw}, nil); err != nil {
		return fail(e, "%v", err)
	}
	fmt.Fprintf(e.stdout, "password of %s set; its sessions and API tokens ended\n", fs.Arg(0))
	if generated {
		fmt.Fprintf(e.stdout, "password: %s\n", pw)
	}
	return exitOK
}

func userToken(ctx context.Context, e *env, args []string) int {
	fs := flags(e, "user token", "USER --name NAME [--ttl 720h] [--hub URL --token-file F | --data DIR]")
	var hf hubFlags
	hf.register(fs)
	name := fs.String("name", "", "what the token is for, e.g. \"nightly audit\"")
	ttl := fs.String("ttl", "", "lifetime, e.g. 720h (default: the hub's auth.token_ttl, 90 days unless configured; at most auth.token_max_ttl)")
	if c := parse(fs, args); c >= 0 {
		return c
	}
	if fs.NArg() != 1 || *name == "" {
		fs.Usage()
		return exitUsage
	}
	c, err := hf.client()
	if err != nil {
		return fail(e, "%v", err)
	}
	var tr service.NewTokenResult
	if err := c.do(ctx, "POST", "/api/v1/tokens", service.TokenRequest{Name: *name, User: fs.Arg(0), TTL: *ttl}, &tr); err != nil {
		return fail(e, "%v", err)
	}
	fmt.Fprintf(e.stdout, "token %s for %s: %s\n(expires %s; shown once: use it as EDX_TOKEN or in a --token-file)\n",
		tr.Token.ID, tr.Token.User, tr.Secret, showTime(tr.Token.Expires))
	return exitOK
}
