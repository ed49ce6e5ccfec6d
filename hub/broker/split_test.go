package broker

import (
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/edxhub/edx/pkg/protocol"
)

// TestUnitsAccountSplit is the evidence for the fix proposed in the package
// documentation: units in a UNITS account reach the EDX account's streams only
// through service imports, whose replies the server maps to private _R_
// subjects, so a unit's reply subject never becomes a publish in EDX. The
// JetStream API is imported under $JS.EDX.API (the account's own $JS.API
// answers "JetStream not enabled"); the agent uses
// jetstream.NewWithAPIPrefix. The staging object store is not covered: its
// ordered consumers take their deliver subject from the request body, so it
// would need an account of its own.
func TestUnitsAccountSplit(t *testing.T) {
	const (
		apiPrefix = "$JS.EDX.API"
		unitA     = "000.00.00.H29"
		unitB     = "000.00.00.H41"
	)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	newAccount := func() (nkeys.KeyPair, string) {
		kp, err := nkeys.CreateAccount()
		must(err)
		pub, err := kp.PublicKey()
		must(err)
		return kp, pub
	}
	okp, err := nkeys.CreateOperator()
	must(err)
	opub, _ := okp.PublicKey()
	_, spub := newAccount()
	ekp, epub := newAccount()
	ukp, upub := newAccount()

	oc := jwt.NewOperatorClaims(opub)
	oc.SystemAccount = spub
	ec := jwt.NewAccountClaims(epub)
	ec.Limits.JetStreamLimits = unlimitedJetStream
	export := func(subj string, rt jwt.ResponseType) {
		ec.Exports.Add(&jwt.Export{Name: subj, Subject: jwt.Subject(subj), Type: jwt.Service, ResponseType: rt})
	}
	export(protocol.SubjectSubmitPrefix+">", jwt.ResponseTypeSingleton)
	export(protocol.SubjectStatusPrefix+">", jwt.ResponseTypeSingleton)
	for _, s := range []string{protocol.StreamDeliver, protocol.StreamNotice} {
		export("$JS.API.CONSUMER.INFO."+s+".*", jwt.ResponseTypeSingleton)
		export("$JS.API.CONSUMER.MSG.NEXT."+s+".*", jwt.ResponseTypeStream)
		export("$JS.ACK."+s+".>", jwt.ResponseTypeSingleton)
	}
	uc := jwt.NewAccountClaims(upub)
	for _, ex := range ec.Exports {
		im := &jwt.Import{Name: ex.Name, Subject: ex.Subject, Account: epub, Type: jwt.Service}
		if rest, ok := strings.CutPrefix(string(ex.Subject), "$JS.API."); ok {
			im.LocalSubject = jwt.RenamingSubject(apiPrefix + "." + rest)
		}
		uc.Imports.Add(im)
	}
	res := &server.MemAccResolver{}
	for pub, c := range map[string]interface {
		Encode(nkeys.KeyPair) (string, error)
	}{
		spub: jwt.NewAccountClaims(spub), epub: ec, upub: uc,
	} {
		tok, err := c.Encode(okp)
		must(err)
		must(res.Store(pub, tok))
	}
	otok, err := oc.Encode(okp)
	must(err)
	op, err := jwt.DecodeOperatorClaims(otok)
	must(err)
	ns, err := server.NewServer(&server.Options{
		Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), MaxPayload: DefaultMaxPayload,
		TrustedOperators: []*jwt.OperatorClaims{op}, SystemAccount: spub, AccountResolver: res, NoSigs: true, NoLog: true,
	})
	must(err)
	ns.Start()
	t.Cleanup(func() { ns.Shutdown(); ns.WaitForShutdown() })
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}

	userCreds := func(account nkeys.KeyPair, perms *jwt.Permissions) []byte {
		kp, err := nkeys.CreateUser()
		must(err)
		pub, _ := kp.PublicKey()
		seed, _ := kp.Seed()
		c := jwt.NewUserClaims(pub)
		if perms != nil {
			c.Permissions = *perms
		}
		tok, err := c.Encode(account)
		must(err)
		creds, err := jwt.FormatUserConfig(tok, seed)
		must(err)
		return creds
	}
	hub, err := nats.Connect(ns.ClientURL(), nats.UserCredentialBytes(userCreds(ekp, nil)))
	must(err)
	t.Cleanup(hub.Close)
	hubJS, err := jetstream.New(hub)
	must(err)
	ctx := t.Context()
	must(EnsureStreams(ctx, hubJS, StreamOptions{}))
	must(EnsureUnitConsumers(ctx, hubJS, unitA))

	perms := UnitPermissions(unitA)
	for i, p := range perms.Pub.Allow {
		if rest, ok := strings.CutPrefix(p, "$JS.API.CONSUMER."); ok {
			perms.Pub.Allow[i] = apiPrefix + ".CONSUMER." + rest
		}
	}
	nc, err := nats.Connect(ns.ClientURL(), nats.UserCredentialBytes(userCreds(ukp, &perms)),
		nats.CustomInboxPrefix(protocol.InboxPrefix(unitA)))
	must(err)
	t.Cleanup(nc.Close)
	js, err := jetstream.NewWithAPIPrefix(nc, apiPrefix)
	must(err)

	// The unit's normal work goes through the imports.
	if _, err := js.Publish(ctx, protocol.SubmitSubject(unitA), []byte("submission"), jetstream.WithMsgID("doc-1")); err != nil {
		t.Fatal(err)
	}
	if _, err := hubJS.Publish(ctx, protocol.DeliverSubject(unitA), []byte("delivery")); err != nil {
		t.Fatal(err)
	}
	cons, err := js.Consumer(ctx, protocol.StreamDeliver, protocol.DeliverConsumer(unitA))
	must(err)
	m, err := cons.Next(jetstream.FetchMaxWait(2 * time.Second))
	must(err)
	must(m.DoubleAck(ctx))

	// The reply subject attacks of TestKnownGapsOfTheSharedAccount land nowhere.
	victim := protocol.StatusSubject(unitB)
	if _, err := hubJS.Publish(ctx, protocol.DeliverSubject(unitA), []byte("delivery 2")); err != nil {
		t.Fatal(err)
	}
	must(nc.PublishRequest(protocol.SubmitSubject(unitA), victim, []byte("x")))
	must(nc.PublishRequest(apiPrefix+".CONSUMER.MSG.NEXT."+protocol.StreamDeliver+"."+protocol.DeliverConsumer(unitA), victim, []byte(`{"batch":1}`)))
	must(nc.PublishRequest(apiPrefix+".CONSUMER.INFO."+protocol.StreamDeliver+"."+protocol.DeliverConsumer(unitA), victim, nil))
	must(nc.Flush())
	time.Sleep(300 * time.Millisecond)
	s, err := hubJS.Stream(ctx, protocol.StreamStatus)
	must(err)
	info, err := s.Info(ctx)
	must(err)
	if info.State.Msgs != 0 {
		t.Fatalf("%d messages injected into %s", info.State.Msgs, protocol.StreamStatus)
	}
}
