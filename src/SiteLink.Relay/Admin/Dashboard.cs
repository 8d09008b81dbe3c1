using Microsoft.AspNetCore.Builder;
using Microsoft.AspNetCore.Http;

namespace SiteLink.Relay.Admin;

/// <summary>
/// A read-only page on the admin listener: sessions, cloud endpoints, recent events and counters, refreshed every few
/// seconds. Plain HTML and a little JavaScript, no build step. The page itself holds no data: it asks the API with the
/// admin key the operator enters (kept in the tab's sessionStorage, or given once in the URL's fragment
/// <c>#key=…</c>, which browsers never send to the server), so it shows nothing without one.
/// </summary>
internal static class Dashboard
{
    public static void Map(WebApplication app)
    {
        app.MapGet("/", () => Results.Redirect("/dashboard")).ExcludeFromDescription();
        app.MapGet("/dashboard", (HttpContext context) =>
        {
            // Nothing on this page may come from elsewhere, and it may not be framed.
            context.Response.Headers.ContentSecurityPolicy = "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'";
            context.Response.Headers.XContentTypeOptions = "nosniff";
            context.Response.Headers.CacheControl = "no-store";
            return Results.Content(Page, "text/html; charset=utf-8");
        }).ExcludeFromDescription();
    }

    private const string Page = """
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <title>SiteLink relay</title>
        <style>
          body { font: 14px system-ui, sans-serif; margin: 1.5rem; color: #1b1f24; }
          h1 { font-size: 1.3rem; } h2 { font-size: 1.05rem; margin-top: 1.6rem; }
          table { border-collapse: collapse; width: 100%; } th, td { text-align: left; padding: .3rem .6rem; border-bottom: 1px solid #ddd; vertical-align: top; }
          th { background: #f4f5f7; } code { font-size: 12px; } .muted { color: #6a737d; } #error { color: #b31d28; }
          .counters span { display: inline-block; margin-right: 1.4rem; }
        </style>
        </head>
        <body>
        <h1>SiteLink relay <span id="relay" class="muted"></span></h1>
        <form id="login" hidden><label>Admin key <input id="key" type="password" autocomplete="off" size="50"></label> <button>Show</button></form>
        <p id="error" role="alert"></p>
        <div id="content" hidden>
          <div class="counters" id="counters"></div>
          <h2>Sessions (<span id="session-count">0</span>)</h2>
          <table><thead><tr><th>Agent</th><th>Tenant</th><th>Token</th><th>SDK</th><th>Address</th><th>RTT</th><th>Since</th><th>Endpoints</th></tr></thead><tbody id="sessions"></tbody></table>
          <h2>Cloud endpoints</h2>
          <table><thead><tr><th>Name</th><th>Tenant</th><th>Protocol</th><th>Address</th><th>Internal endpoint</th><th>Connections</th><th>Source</th></tr></thead><tbody id="endpoints"></tbody></table>
          <h2>Recent events</h2>
          <table><thead><tr><th>Time</th><th>Type</th><th>Tenant</th><th>Subject</th><th>Details</th></tr></thead><tbody id="events"></tbody></table>
          <p class="muted">Refreshed every 5 seconds. Read-only.</p>
        </div>
        <script>
        "use strict";
        const fragment = new URLSearchParams(location.hash.slice(1));
        if (fragment.get("key")) { sessionStorage.setItem("sitelink.key", fragment.get("key")); history.replaceState(null, "", location.pathname); }
        const $ = id => document.getElementById(id);
        function cell(row, text) { const td = document.createElement("td"); td.textContent = text ?? ""; row.appendChild(td); }
        function fill(id, items, columns) {
          const body = $(id); body.replaceChildren();
          for (const item of items) { const row = document.createElement("tr"); for (const c of columns) cell(row, c(item)); body.appendChild(row); }
        }
        async function get(path) {
          const response = await fetch(path, { headers: { "Authorization": "Bearer " + sessionStorage.getItem("sitelink.key") } });
          if (response.status === 401 || response.status === 403) { sessionStorage.removeItem("sitelink.key"); throw new Error("The admin key was not accepted."); }
          if (!response.ok) { const problem = await response.json().catch(() => ({})); throw new Error(problem.detail || response.statusText); }
          return response.json();
        }
        async function refresh() {
          if (!sessionStorage.getItem("sitelink.key")) { $("login").hidden = false; $("content").hidden = true; return; }
          try {
            const [status, sessions, endpoints, events] = await Promise.all([get("/v1/status"), get("/v1/sessions?limit=500"), get("/v1/endpoints?limit=500"), get("/v1/events?limit=50")]);
            $("relay").textContent = status.relayId + (status.region ? " (" + status.region + ")" : "") + " · " + status.version;
            $("counters").replaceChildren(...Object.entries(status.counters).map(([k, v]) => { const s = document.createElement("span"); s.textContent = k + ": " + v; return s; }));
            $("session-count").textContent = sessions.items.length;
            fill("sessions", sessions.items, [s => s.agentId, s => s.tenant, s => s.token, s => s.sdkVersion, s => s.remoteAddress, s => s.rttMs == null ? "" : s.rttMs.toFixed(2) + " ms", s => new Date(s.connectedAt).toLocaleString(), s => s.binds.map(b => b.name).join(", ")]);
            fill("endpoints", endpoints.items, [e => e.spec.name, e => e.spec.tenant, e => e.spec.protocol, e => e.address ?? e.problem ?? "", e => e.spec.endpoint, e => String(e.activeConnections), e => e.source]);
            fill("events", events.items, [e => new Date(e.time).toLocaleTimeString(), e => e.type, e => e.tenant, e => e.subject, e => JSON.stringify(e.data)]);
            $("error").textContent = ""; $("login").hidden = true; $("content").hidden = false;
          } catch (e) { $("error").textContent = e.message; if (!sessionStorage.getItem("sitelink.key")) { $("login").hidden = false; $("content").hidden = true; } }
        }
        $("login").addEventListener("submit", e => { e.preventDefault(); sessionStorage.setItem("sitelink.key", $("key").value); $("key").value = ""; refresh(); });
        refresh(); setInterval(refresh, 5000);
        </script>
        </body>
        </html>
        """;
}
