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
        var routed = registry.TryRoute("ACME", "db-main", out var member);
        var (target, bindId) = (member.Session, member.BindId);

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
            Assert.That(registry.TryRoute("acme", "api", out _), Is.False);
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

    [TestCase("", "db", EndpointKind.Tcp)]
    [TestCase("b1", "bad name", EndpointKind.Tcp)]
    [TestCase("b1", "db", EndpointKind.Unspecified)]
    public void Bind_Malformed_IsInvalid(string bindId, string name, EndpointKind kind)
    {
        var registry = Create();
        var session = Session(Acme);
        registry.TryAdd(session);

        var result = registry.Bind(session, new Bind { BindId = bindId, Name = name, Kind = kind });

        Assert.That(result.Status, Is.EqualTo(BindStatus.Invalid));
    }

    private static Bind Pooled(string name, string bindId = "b1") => new() { BindId = bindId, Name = name, Kind = EndpointKind.Tcp, Pooling = true };

    [Test]
    public void Pool_RoutesToTheLeastActiveMember_SkipsLeaving_AndForgetsRemoved()
    {
        var registry = Create();
        var (a, b, c) = (Session(Acme, "a"), Session(Acme, "b"), Session(Acme, "c"));
        foreach (var session in new[] { a, b, c })
        {
            registry.TryAdd(session);
            Assert.That(registry.Bind(session, Pooled("api")).Status, Is.EqualTo(BindStatus.Ok));
        }

        // Three idle members: each of the first three connections goes to a different one (the least active; TryRoute
        // counts the connection it routes).
        RouteMember Route()
        {
            Assert.That(registry.TryRoute("acme", "api", out var member), Is.True);
            return member;
        }

        var members = new Dictionary<AgentSession, RouteMember>();
        for (var i = 0; i < 3; i++)
        {
            var member = Route();
            members[member.Session] = member;
        }

        Assert.That(members.Keys, Is.EquivalentTo(new[] { a, b, c }), "with none busy, then one each: every member once");
        members[a].Acquire();
        members[b].Acquire();
        Assert.That(Route().Session, Is.SameAs(c), "the member with the fewest active connections");

        c.MarkLeaving();
        members[a].Release();
        Assert.That(Route().Session, Is.SameAs(a), "a leaving member is offered nothing, however idle");
        registry.Remove(a);
        registry.Remove(b);
        Assert.Multiple(() =>
        {
            Assert.That(registry.TryRoute("acme", "api", out _), Is.False, "only a leaving member is left");
            Assert.That(registry.Members("acme", "api"), Is.EqualTo(new[] { c }));
        });
    }

    [Test]
    public void Pool_PrefersMembersWithRoom_OverLessBusyOnesAtTheirLimit()
    {
        var registry = Create();
        var (full, free) = (Session(Acme, "full"), Session(Acme, "free"));
        foreach (var session in new[] { full, free })
        {
            registry.TryAdd(session);
            registry.Bind(session, Pooled("api"));
        }

        // "free" is busier, but "full" would refuse (at its stream limit): "free" serves.
        for (var i = 0; i < 3; i++)
        {
            Assert.That(registry.TryRoute("acme", "api", s => s != full, out var member), Is.True);
            Assert.That(member.Session, Is.SameAs(free));
        }
    }

    [Test]
    public void Pool_TiesAreBrokenAtRandom_EvenlyEnough()
    {
        var registry = Create();
        var sessions = Enumerable.Range(0, 3).Select(i => Session(Acme, $"m{i}")).ToArray();
        foreach (var session in sessions)
        {
            registry.TryAdd(session);
            registry.Bind(session, Pooled("api"));
        }

        var counts = sessions.ToDictionary(s => s, _ => 0);
        for (var i = 0; i < 30_000; i++)
        {
            registry.TryRoute("acme", "api", out var member);
            counts[member.Session]++;
            // Closed at once: every pick is among three idle members.
            member.Release();
        }

        Assert.That(counts.Values, Is.All.InRange(9_000, 11_000), "30,000 picks among three idle members");
    }

    [Test]
    public void Pool_MismatchedBinds_AreRefused_AndPoolsArePerTenant()
    {
        var registry = Create();
        var (pooled, single, other, globex) = (Session(Acme, "p"), Session(Acme, "s"), Session(Acme, "o"), Session(Globex, "g"));
        foreach (var session in new[] { pooled, single, other, globex })
        {
            registry.TryAdd(session);
        }

        registry.Bind(pooled, Pooled("api"));
        registry.Bind(single, Bind("db"));

        Assert.Multiple(() =>
        {
            Assert.That(registry.Bind(other, Bind("api")).Status, Is.EqualTo(BindStatus.PoolingMismatch));
            Assert.That(registry.Bind(other, Pooled("db")).Status, Is.EqualTo(BindStatus.PoolingMismatch));
            Assert.That(registry.Bind(other, Bind("db")).Status, Is.EqualTo(BindStatus.NameTaken));
            Assert.That(registry.Bind(pooled, Pooled("api", "b2")).Status, Is.EqualTo(BindStatus.NameTaken), "one membership per session");
            Assert.That(registry.Bind(globex, Bind("api")).Status, Is.EqualTo(BindStatus.Ok), "another tenant's name");
            Assert.That(registry.Members("acme", "api"), Is.EqualTo(new[] { pooled }));
        });
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
            Assert.That(registry.TryRoute("acme", "one", out _), Is.False);
            Assert.That(registry.TryRoute("acme", "two", out _), Is.False);
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
            Assert.That(unbound?.Name, Is.EqualTo("one"));
            Assert.That(unknown, Is.Null);
            Assert.That(registry.TryRoute("acme", "one", out _), Is.False);
            Assert.That(registry.TryRoute("acme", "two", out _), Is.False, "a leaving session is offered nothing new");
        });
    }
}
