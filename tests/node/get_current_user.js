// A client in another language: loads protos/ directly with @grpc/proto-loader and calls
// AccountService.GetCurrentUser with an API key. Prints the reply as JSON; exits non-zero on error.
// Usage: node tests/node/get_current_user.js HOST:PORT API_KEY
'use strict';
const path = require('path');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');

const [target, key] = process.argv.slice(2);
const definition = protoLoader.loadSync('monitors/v1/account_service.proto', {
  includeDirs: [path.join(__dirname, '..', '..', 'protos')],
  keepCase: true,
  longs: String,
  defaults: true,
});
const monitors = grpc.loadPackageDefinition(definition).monitors.v1;
const client = new monitors.AccountService(target, grpc.credentials.createInsecure());
const metadata = new grpc.Metadata();
if (key) metadata.add('authorization', `Bearer ${key}`);
client.GetCurrentUser({}, metadata, { deadline: Date.now() + 5000 }, (err, reply) => {
  if (err) {
    console.log(JSON.stringify({ code: err.code, details: err.details }));
    process.exit(3);
  }
  console.log(JSON.stringify(reply));
  client.close();
});
