using RaySharp.Tests.Infrastructure;

namespace RaySharp.Tests;

/// <summary>A node serving an object dies in the middle of a transfer: the reader finishes from another copy.</summary>
public sealed class ObjectTransferFailoverTests : IDisposable
{
    private readonly TestNetwork _net = TestNetwork.Create(4);

    public void Dispose() => _net.Dispose();

    [Fact]
    public async Task AReadSurvivesItsSourceNodeDyingMidTransferWhenAnotherCopyExists()
    {
        var (head, primary, copy, reader) = (_net[0], _net[1], _net[2], _net[3]);
        Assert.Equal(0, (await Cli.RunAsync(head, "start", "--head", "--num-cpus=1")).ExitCode);
        // The copy's node serves slowly (an injected fault), so that it can be killed in the middle of serving.
        copy.Environment["RAYSHARP_testing_object_chunk_delay_ms"] = "400";
        foreach (var worker in new[] { primary, copy, reader })
        {
            var joined = await Cli.RunAsync(worker, "start", $"--address={head.Ip}:6379", "--num-cpus=1");
            Assert.True(joined.ExitCode == 0, joined.ToString());
        }

        using var driver = Cli.StartDllBackground(Cli.ProgramDll("RaySharp.TestDriver"), head, "store-failover", "auto", primary.Ip, copy.Ip, reader.Ip);
        var output = new System.Text.StringBuilder();
        var pulling = new TaskCompletionSource();
        driver.OutputDataReceived += (_, e) =>
        {
            if (e.Data is null) return;
            lock (output) output.AppendLine(e.Data);
            if (e.Data == "pulling") pulling.TrySetResult();
        };
        driver.BeginOutputReadLine();
        var stderr = driver.StandardError.ReadToEndAsync();
        await pulling.Task.WaitAsync(TimeSpan.FromSeconds(120));
        // The reader pulls from the copy first (copies before the primary); 50 chunks at 400 ms, 4 at a time, take ~5 s.
        // Killed once it has served some (and so is in the middle of serving the rest).
        await ClusterAssertions.EventuallyAsync(async () =>
        {
            var memory = await Cli.RunAsync(head, "memory", "--format", "json");
            return memory.ExitCode == 0 && System.Text.Json.JsonDocument.Parse(memory.Stdout).RootElement.EnumerateArray()
                .Any(n => n.GetProperty("node_ip_address").GetString() == copy.Ip && n.GetProperty("served_bytes").GetInt64() > 0);
        }, TimeSpan.FromSeconds(30), "the copy's node to serve its first chunks to the reader");
        var killed = await Cli.RunAsync(copy, "stop", "--force");
        Assert.Equal(0, killed.ExitCode);

        Assert.True(driver.WaitForExit(TimeSpan.FromSeconds(90)), "the driver did not finish: " + output);
        driver.WaitForExit();
        var text = output.ToString();
        Assert.True(driver.ExitCode == 0, text + await stderr);
        Assert.Contains("copy True", text);
        Assert.Contains("failover True", text);
        var readerLog = string.Concat(ClusterAssertions.Sessions(reader).Select(s => File.ReadAllText(Path.Combine(s.Path, "logs", "raylet.out"))));
        Assert.Contains($"from {copy.Ip}:", readerLog);
        Assert.Contains("its chunks are asked of another holder", readerLog);

        foreach (var h in new[] { reader, primary, head }) await ClusterAssertions.StopAndAssertCleanAsync(h);
    }
}
