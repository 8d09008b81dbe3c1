using SiteLink.Protocol.V1;
using SiteLink.Relay.Configuration;
using SiteLink.Relay.Security;
using SiteLink.Relay.Sessions;

namespace SiteLink.Relay.Tests;

[TestFixture]
internal sealed class SessionRegistryTests
{
    private static readonly TokenIdentity Acme = new("acme", "acme", new EndpointAcl(["*"]));
    private static readonly TokenIdentity AcmeDb = new("acme-db", "acme", new EndpointAcl(["db-*"]));
    private static readonly TokenIdentity Globex = new("globex", "globex", new EndpointAcl(["*"]));

    private static SessionRegistry Create(Action<RelayLimits>? limits = null)
    {
        var options = new RelayOptions();
        limits?.Invoke(options.Limits);
        return new SessionRegistry(options);
    }

    private static AgentSession Session(TokenIdentity token, string id = "s") => new(id + Guid.NewGuid().ToString("N"), token, "client", "peer", "1.0");

    private static Bind Bind(string name, string bindId = "b1") => new() { BindId = bindId, Name = name, Kind = EndpointKind.Tcp };

    [Test]
    public void Bind_AllowedName_RoutesToTheSession()
    {
        var registry = Create();
        var session = Session(Acme);
        registry.TryAdd(session);

        var result = registry.Bind(session, Bind("DB-Main"));
        var routed = registry.TryRoute("ACME", "db-main", out var target, out var bindId);

        Assert.Multiple(() =>
        {
            Assert.That(result.Status, Is.EqualTo(BindStatus.Ok));
            Assert.That(routed, Is.True);
            Assert.That(target, Is.SameAs(session));
            Assert.That(bindId, Is.EqualTo("b1"));
        });
    }

    [Test]
    public void Bind_OutsideAcl_IsDenied()
    {
        var registry = Create();
        var session = Session(AcmeDb);
        registry.TryAdd(session);

        var result = registry.Bind(session, Bind("api"));

        Assert.Multiple(() =>
        {
            Assert.That(result.Status, Is.EqualTo(BindStatus.Denied));
            Assert.That(result.Message, Does.Contain("db-*"));
            Assert.That(registry.TryRoute("acme", "api", out _, out _), Is.False);
        });
    }

    [Test]
    public void Bind_NameHeldInSameTenant_IsTaken_ButFreeInAnotherTenant()
    {
        var registry = Create();
        var first = Session(Acme);
        var second = Session(Acme);
        var other = Session(Globex);
        registry.TryAdd(first);
        registry.TryAdd(second);
        registry.TryAdd(other);
        registry.Bind(first, Bind("db"));

        Assert.Multiple(() =>
        {
            Assert.That(registry.Bind(second, Bind("db")).Status, Is.EqualTo(BindStatus.NameTaken));
            Assert.That(registry.Bind(first, Bind("db", "b2")).Status, Is.EqualTo(BindStatus.NameTaken));
            Assert.That(registry.Bind(other, Bind("db")).Status, Is.EqualTo(BindStatus.Ok));
        });
    }

    [TestCase("", "db", EndpointKind.Tcp, false)]
    [TestCase("b1", "bad name", EndpointKind.Tcp, false)]
    [TestCase("b1", "db", EndpointKind.Unspecified, false)]
    [TestCase("b1", "db", EndpointKind.Tcp, true)]
    public void Bind_Malformed_IsInvalid(string bindId, string name, EndpointKind kind, bool pooling)
    {
        var registry = Create();
        var session = Session(Acme);
        registry.TryAdd(session);

        var result = registry.Bind(session, new Bind { BindId = bindId, Name = name, Kind = kind, Pooling = pooling });

        Assert.That(result.Status, Is.EqualTo(BindStatus.Invalid));
    }

    [Test]
    public void Bind_ReusedBindId_IsInvalid()
    {
        var registry = Create();
        var session = Session(Acme);
        registry.TryAdd(session);
        registry.Bind(session, Bind("one", "b1"));

        Assert.That(registry.Bind(session, Bind("two", "b1")).Status, Is.EqualTo(BindStatus.Invalid));
    }

    [Test]
    public void Bind_BeyondLimit_IsLimitExceeded()
    {
        var registry = Create(l => l.MaxBindsPerSession = 1);
        var session = Session(Acme);
        registry.TryAdd(session);
        registry.Bind(session, Bind("one", "b1"));

        Assert.That(registry.Bind(session, Bind("two", "b2")).Status, Is.EqualTo(BindStatus.LimitExceeded));
    }

    [Test]
    public void TryAdd_BeyondSessionsPerToken_IsRefused_UntilOneLeaves()
    {
        var registry = Create(l => l.MaxSessionsPerToken = 1);
        var first = Session(Acme);
        var second = Session(Acme);
        registry.TryAdd(first);

        var refused = registry.TryAdd(second);
        registry.Remove(first);
        var accepted = registry.TryAdd(second);

        Assert.Multiple(() =>
        {
            Assert.That(refused, Does.Contain("MaxSessionsPerToken"));
            Assert.That(accepted, Is.Null);
            Assert.That(registry.TryAdd(Session(Globex)), Is.Null, "the limit is per token");
        });
    }

    [Test]
    public void Remove_DropsEveryRouteOfTheSession_AndFreesItsNames()
    {
        var registry = Create();
        var session = Session(Acme);
        var next = Session(Acme);
        registry.TryAdd(session);
        registry.TryAdd(next);
        registry.Bind(session, Bind("one", "b1"));
        registry.Bind(session, Bind("two", "b2"));

        registry.Remove(session);

        Assert.Multiple(() =>
        {
            Assert.That(registry.TryRoute("acme", "one", out _, out _), Is.False);
            Assert.That(registry.TryRoute("acme", "two", out _, out _), Is.False);
            Assert.That(registry.Bind(next, Bind("one")).Status, Is.EqualTo(BindStatus.Ok));
            Assert.That(registry.SessionCount, Is.EqualTo(1));
        });
    }

    [Test]
    public void Unbind_And_Goodbye_StopRouting()
    {
        var registry = Create();
        var session = Session(Acme);
        registry.TryAdd(session);
        registry.Bind(session, Bind("one", "b1"));
        registry.Bind(session, Bind("two", "b2"));

        var unbound = registry.Unbind(session, "b1");
        var unknown = registry.Unbind(session, "nope");
        session.MarkLeaving();

        Assert.Multiple(() =>
        {
            Assert.That(unbound, Is.EqualTo("one"));
            Assert.That(unknown, Is.Null);
            Assert.That(registry.TryRoute("acme", "one", out _, out _), Is.False);
            Assert.That(registry.TryRoute("acme", "two", out _, out _), Is.False, "a leaving session is offered nothing new");
        });
    }
}
