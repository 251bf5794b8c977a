kumo.on('smtp_server_mail_from', function(sender)
  kumo.disconnect(421, 'mta.example.com go away!')
  -- this line is not reached
  -- The service responds to the peer with '421 mta.example.com go away!'
  -- and then drops the connection
end)
